"""The public API is what __init__ re-exports by name; this list changes only on purpose."""

from __future__ import annotations

import inspect

import trio_culler
import trio_culler.testing

EXPECTED = {
    "Action",
    "Config",
    "ConfigError",
    "Culler",
    "CullerError",
    "CullerStatistics",
    "CullerStopped",
    "Decision",
    "HubAuthError",
    "HubError",
    "HubProtocolError",
    "HubStatusError",
    "HubTimeout",
    "HubUnavailable",
    "Kernel",
    "PassError",
    "PassReport",
    "Policy",
    "Server",
    "ServerActivity",
    "Terminal",
    "User",
    "__version__",
    "decide_server",
    "decide_user",
    "open_culler",
    "run_pass",
    "serve",
}


def test_public_names() -> None:
    assert set(trio_culler.__all__) == EXPECTED
    for name in EXPECTED:
        assert hasattr(trio_culler, name), name


def test_public_objects_live_in_private_modules_but_are_reexported() -> None:
    for name in EXPECTED - {"__version__"}:
        module = getattr(trio_culler, name).__module__
        assert module.startswith("trio_culler._"), (name, module)


def test_only_blocking_functions_are_async_and_none_takes_a_timeout() -> None:
    assert inspect.iscoroutinefunction(trio_culler.run_pass)
    assert inspect.iscoroutinefunction(trio_culler.serve)
    assert not inspect.iscoroutinefunction(trio_culler.decide_server)
    for function in (trio_culler.run_pass, trio_culler.serve, trio_culler.Culler.run_pass_now):
        assert "timeout" not in inspect.signature(function).parameters


TESTING_EXPECTED = {
    "FakeHub",
    "FakeHubStatistics",
    "FakeKernel",
    "FakeServer",
    "FakeTerminal",
    "FakeUser",
    "PageRequest",
    "Population",
    "open_fake_hub",
}


def test_testing_package_exports_the_fake_hub_from_private_modules() -> None:
    # As trio.testing: a package of one module per concept, each public name re-exported from __init__.
    assert set(trio_culler.testing.__all__) == TESTING_EXPECTED
    for name in TESTING_EXPECTED:
        module = getattr(trio_culler.testing, name).__module__
        assert module.startswith("trio_culler.testing._"), (name, module)


def test_package_is_typed() -> None:
    from importlib.resources import files

    assert files("trio_culler").joinpath("py.typed").is_file()
