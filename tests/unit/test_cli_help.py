"""Every command, option and positional argument of `dataplane` (and of the
lab's CLI) says what it is in --help; every list has an `ls` alias and
every command that prints takes -o json."""

from __future__ import annotations

import argparse

import pytest

from dataplane.cli.main import parser as dataplane_parser
from lab.cli import parser as lab_parser

# Commands that print nothing but a stream or serve in the foreground.
NO_OUTPUT = {("agent", "run"), ("docker-plugin",)}


def walk(p: argparse.ArgumentParser, path=()):
    """(path, parser, help of the subcommand) for every parser in the tree."""
    yield path, p
    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction):
            seen = set()
            for name, sub in a.choices.items():
                if id(sub) not in seen:
                    seen.add(id(sub))
                    yield from walk(sub, path + (name,))


def subcommand_help(p: argparse.ArgumentParser) -> dict[str, str | None]:
    out = {}
    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction):
            out.update({c.dest: c.help for c in a._choices_actions})
    return out


PARSERS = [("dataplane", dataplane_parser), ("lab", lab_parser)]


@pytest.mark.parametrize("prog,make", PARSERS, ids=[p[0] for p in PARSERS])
def test_every_option_and_argument_has_help(prog, make):
    missing = []
    for path, p in walk(make()):
        for a in p._actions:
            if isinstance(a, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            if not a.help or a.help == argparse.SUPPRESS:
                missing.append(f"{prog} {' '.join(path)}: {'/'.join(a.option_strings) or a.dest}")
        for name, text in subcommand_help(p).items():
            if not text:
                missing.append(f"{prog} {' '.join(path + (name,))}: no help")
    assert not missing, "\n".join(missing)


@pytest.mark.parametrize("prog,make", PARSERS, ids=[p[0] for p in PARSERS])
def test_every_list_answers_to_ls_too(prog, make):
    for path, p in walk(make()):
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction) and ("list" in a.choices or "ls" in a.choices):
                assert a.choices.get("list") is a.choices.get("ls"), f"{prog} {' '.join(path)}: list and ls differ"


def test_every_dataplane_command_that_prints_takes_json():
    missing = []
    for path, p in walk(dataplane_parser()):
        leaf = not any(isinstance(a, argparse._SubParsersAction) for a in p._actions)
        if leaf and path and path not in NO_OUTPUT and "ls" not in path:
            if not any("--output" in a.option_strings for a in p._actions):
                missing.append(" ".join(path))
    assert not missing, missing


def test_help_and_version_exit_cleanly(capsys):
    for argv in (["--help"], ["up", "--help"], ["endpoint", "add", "--help"], ["--version"]):
        with pytest.raises(SystemExit) as e:
            dataplane_parser().parse_args(argv)
        assert e.value.code == 0
    assert "dataplane " in capsys.readouterr().out
