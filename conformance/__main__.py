"""``python -m conformance SPEC [pytest args]``: run the contract suite against one strategy;
``python -m conformance --store FACTORY [pytest args]``: run the store suite (section T) against one store.

The same as ``pytest --strategy=SPEC --conformance-only [pytest args]`` (``pytest --store=FACTORY
--conformance-only``), for people who do not want to remember flags; the exit code is pytest's. Works from
an installed kit (``pytest11`` entry point) and from a checkout (the plugin is then loaded with
``-p conformance.plugin``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

__all__ = ["main"]

_USAGE = """\
usage: python -m conformance SPEC [pytest args]
       python -m conformance --store FACTORY [pytest args]
       python -m conformance verify CERTIFICATE [--badge PATH]
       python -m conformance --catalogue     print the contract catalogue as JSON
       python -m conformance --catalogue-markdown    print the contract reference (docs/contracts.md)

Check the ExecutionStrategy SPEC against every contract of the conformance catalogue, or, with --store
and no SPEC, the LightningStore that FACTORY builds against section T through every access path.

SPEC     a registry alias (shm, cs, ipc), a dotted path (my_pkg.MyStrategy) or module:Class
FACTORY  a store class or function, dotted path or module:Callable

Any further arguments go to pytest, for example:
  --strategy-option KEY=VALUE     constructor argument (repeatable; VALUE is JSON when it parses)
  --store FACTORY                 with SPEC: the store the strategy gets
                                  (default agentlightning.store.memory:InMemoryLightningStore)
  --store-option KEY=VALUE        store factory keyword (repeatable; VALUE is JSON when it parses)
  --conformance-timeout-scale F   multiply every time bound by F
  --conformance-seed N            replay a run's randomised choices
  --conformance-report PATH       write PATH.json and PATH.md (or just one when PATH ends .json/.md)
  --conformance-waivers FILE      waiver file (TOML or JSON)
  --conformance-profile NAME      quick, ci (default), thorough or certify
  --conformance-repeat N          run each item N times; report passes/N and flaky items
  --conformance-certificate PATH  write the run's certificate (JSON)
  -k K3                           run only contract K3;  -n 2  run on two xdist workers
  -p NAME                         also load the installed pytest plugin NAME
  --plugin-autoload               load every installed pytest plugin (by default only the kit,
                                  pytest-xdist and pytest-timeout load: the run is the kit alone)

Only the contract suite is collected (--conformance-only); use `pytest --strategy=SPEC` to run it beside
a project's own tests. The exit code is pytest's: 0 when every applicable contract passed.

`verify CERTIFICATE` checks a certificate (complete, unwaived, every verdict accepted, consistent with
the installed kit and strategy): exit 0 when it holds, 1 with every reason when not; --badge PATH also
writes a shields.io endpoint badge JSON.
"""


def _plugin_is_registered() -> bool:
    """Whether the ``pytest11`` entry point will load the plugin (else load it by module name)."""
    from importlib import metadata

    return any(ep.value.startswith("conformance.plugin") for ep in metadata.entry_points(group="pytest11"))


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(_USAGE, end="")
        return 0 if args else 4  # pytest's usage-error code when SPEC is missing
    if args[0] == "--catalogue":
        from conformance.catalogue import catalogue_json

        print(catalogue_json())
        return 0
    if args[0] == "--catalogue-markdown":
        from conformance.catalogue import catalogue_markdown

        print(catalogue_markdown(), end="")
        return 0
    if args[0] == "verify":
        return _verify(args[1:])
    spec, rest = args[0], args[1:]
    if spec == "--store" or spec.startswith("--store="):
        store = spec.partition("=")[2] if "=" in spec else (rest.pop(0) if rest else "")
        if not store or store.startswith("-"):
            print("python -m conformance: --store needs a FACTORY\n", file=sys.stderr)
            print(_USAGE, end="", file=sys.stderr)
            return 4
        return _pytest([f"--store={store}", "--conformance-only", *rest])
    if spec.startswith("-"):
        print(
            f"python -m conformance: the first argument must be the strategy SPEC, got {spec!r}\n",
            file=sys.stderr,
        )
        print(_USAGE, end="", file=sys.stderr)
        return 4
    return _pytest([f"--strategy={spec}", "--conformance-only", *rest])


def _verify(args: list[str]) -> int:
    import argparse
    import json

    from conformance.certificate import CertificateError, badge, load_certificate, verify_certificate

    parser = argparse.ArgumentParser(prog="python -m conformance verify")
    parser.add_argument("certificate", metavar="CERTIFICATE")
    parser.add_argument("--badge", metavar="PATH", help="also write a shields.io endpoint badge JSON")
    options = parser.parse_args(args)
    try:
        document = load_certificate(options.certificate)
    except CertificateError as error:
        print(f"python -m conformance verify: {error}", file=sys.stderr)
        return 2
    problems = verify_certificate(document)
    subject = document.get("subject", {})
    if options.badge:
        with open(options.badge, "w", encoding="utf-8") as handle:
            json.dump(badge(document, problems), handle)
            handle.write("\n")
    title = f"{subject.get('class')} {subject.get('version')} (kit {document.get('kit_version')})"
    if problems:
        print(f"NOT CERTIFIED: {title}: {len(problems)} problem(s)")
        for problem in problems:
            print(f"  - {problem}")
        return 1
    totals = document.get("totals", {})
    print(
        f"CERTIFIED: {title}, profile {document['profile']['name']}, seed {document.get('seed')}, "
        f"repeat {document.get('repeat')}: {totals.get('pass', 0)} pass, {totals.get('n/a', 0)} n/a, "
        f"{totals.get('limitation', 0)} declared limitation(s)"
    )
    return 0


_COOPERATING_PLUGINS = ("xdist", "timeout")
"""Installed pytest plugins (``pytest11`` entry point names) the kit's own run still loads when it turns
pytest's plugin autoload off: pytest-xdist for ``-n``, pytest-timeout so a project's ``timeout`` setting
keeps applying to the kit's items."""

_AUTOLOAD_FLAG = "--plugin-autoload"


def _installed_plugins(names: Sequence[str]) -> list[str]:
    """Those of ``names`` that an installed distribution registers as a ``pytest11`` entry point."""
    from importlib import metadata

    installed = {ep.name for ep in metadata.entry_points(group="pytest11")}
    return [name for name in names if name in installed]


def _plugin_args(args: list[str]) -> list[str]:
    """The ``-p`` arguments of the kit's own run, removing ``--plugin-autoload`` from ``args``.

    The run collects only the contract suite, so every other installed pytest plugin would only cost
    time: each pytest process (the controller and every xdist worker) imports it and, with bytecode
    writing off, re-rewrites its assertions (a schemathesis or hypothesis plugin alone: seconds of CPU per
    process). So pytest's plugin autoload is off (``PYTEST_DISABLE_PLUGIN_AUTOLOAD``, inherited by the
    xdist workers) and the kit loads itself and ``_COOPERATING_PLUGINS`` by name; further plugins are
    named with ``-p NAME``. ``--plugin-autoload`` keeps pytest's default: every installed plugin loads.
    """
    if _AUTOLOAD_FLAG in args:
        while _AUTOLOAD_FLAG in args:
            args.remove(_AUTOLOAD_FLAG)
        return [] if _plugin_is_registered() else ["-p", "conformance.plugin"]
    os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    plugins = ["conformance.plugin", *_installed_plugins(_COOPERATING_PLUGINS)]
    return [arg for name in plugins for arg in ("-p", name)]


def _pytest(args: list[str]) -> int:
    import pytest

    plugin_args = _plugin_args(args)
    # ``python -m conformance`` imported the package before pytest could mark it for assertion
    # rewriting; the kit raises its own messages, so that warning is noise here.
    quiet = ["-W", "ignore:Module already imported so cannot be rewritten:pytest.PytestAssertRewriteWarning"]
    return int(pytest.main([*plugin_args, *quiet, *args]))


if __name__ == "__main__":
    sys.exit(main())
