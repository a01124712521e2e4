"""`rlmem envs`: list the registered environments, or describe one."""

from __future__ import annotations

import argparse

from envs import popgym as pg
from envs.registry import env_names, get_spec, make_sync_vector_env


def _describe(name: str) -> None:
    spec = get_spec(name)
    venv = make_sync_vector_env(name, 1)
    print(f"{spec.name}  ({spec.family})")
    if spec.description:
        print(f"  {spec.description}")
    for key, space in venv.single_observation_space.spaces.items():
        print(f"  observation[{key!r}]: {space.dtype} {list(space.shape)}")
    print(f"  action: {venv.single_action_space}")
    print(f"  previous action + is-first flag: {'yes' if venv.prev_action else 'no'}")
    if spec.score:
        print(f"  score: {'normalised MMER' if spec.score == 'popgym' else 'success rate'}")
    if spec.deprecated:
        print(f"  deprecated: {spec.deprecated}")
    venv.close()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="rlmem envs",
        description="List the environments rlmem knows (POPGym, MiniGrid, gymnasium ids).",
    )
    parser.add_argument("name", nargs="?", help="describe this env (spaces, wrappers, score)")
    parser.add_argument(
        "--all",
        action="store_true",
        help="also list every MiniGrid env and every other gymnasium id",
    )
    args = parser.parse_args(argv)
    if args.name:
        try:
            _describe(args.name)
        except ValueError as err:
            print(f"rlmem envs: {err}")
            return 2
        return 0

    print("POPGym (popgym/<EnvClass>; previous action + is-first flag; score: normalised MMER)")
    for name in env_names(("popgym",)):
        print(f"  {name:42s} {get_spec(name).description}")
    print(
        f"  popgym/LabyrinthEscape*, popgym/LabyrinthExplore* by full name only: "
        f"{pg.DEPRECATION_NOTE}"
    )
    print(
        "  difficulty-free classes (e.g. popgym/RepeatPrevious) take --env-opt constructor options"
    )
    print("\nMiniGrid memory tasks (minigrid/<Name>; image + direction; score: success rate)")
    for name in env_names(("minigrid",), memory_only=True):
        print(f"  {name:42s} {get_spec(name).description}")
    print(
        "  option agent_view_size (odd >= 3; Memory envs default to 3, which makes them "
        "memory tasks)"
    )
    if args.all:
        print("\nother MiniGrid envs")
        memory = set(env_names(("minigrid",), memory_only=True))
        for name in env_names(("minigrid",)):
            if name not in memory:
                print(f"  {name}")
        print("\ngymnasium ids (observations flattened, images to the CNN)")
        for name in env_names(("gymnasium",)):
            print(f"  {name}")
    else:
        print(
            "\n`rlmem envs --all` also lists the other MiniGrid envs and every gymnasium id; "
            "`rlmem envs NAME` describes one."
        )
    return 0
