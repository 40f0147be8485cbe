"""PROXY_WORKERS and the worker supervisor's pure parts: settings parsing, restart budget and back-off, the
port probe."""

from __future__ import annotations

import socket

import pytest

from services.common.settings import SettingsError
from services.common.workers import RestartBudget, port_taken, restart_delay_s
from services.proxy import settings

BASE = {"ROUTEUR_ADMIN_TOKEN": "t" * 40}


def test_one_worker_by_default_serving_itself() -> None:
    loaded = settings.load(BASE)
    assert loaded.workers == 1 and loaded.worker_index is None and loaded.ready_fd == -1
    assert not loaded.supervises


def test_several_workers_make_a_supervisor_and_an_index_makes_a_worker() -> None:
    supervisor = settings.load({**BASE, "PROXY_WORKERS": "4"})
    assert supervisor.workers == 4 and supervisor.supervises
    worker = settings.load({**BASE, "PROXY_WORKERS": "4", "PROXY_WORKER_INDEX": "3", "PROXY_READY_FD": "7"})
    assert worker.worker_index == 3 and worker.ready_fd == 7 and not worker.supervises


@pytest.mark.parametrize("value", ["two", "1.5", "2x"])
def test_a_non_integer_worker_count_is_refused_by_name(value: str) -> None:
    with pytest.raises(SettingsError, match=r"PROXY_WORKERS must be an integer, got"):
        settings.load({**BASE, "PROXY_WORKERS": value})


@pytest.mark.parametrize("value", ["0", "-1", "257"])
def test_a_worker_count_out_of_range_is_refused(value: str) -> None:
    with pytest.raises(SettingsError, match=rf"PROXY_WORKERS must be between 1 and 256 .*got {value}$"):
        settings.load({**BASE, "PROXY_WORKERS": value})


def test_several_workers_need_a_fixed_port() -> None:
    with pytest.raises(SettingsError, match="PROXY_WORKERS > 1 needs a fixed PROXY_PORT"):
        settings.load({**BASE, "PROXY_WORKERS": "2", "PROXY_PORT": "0"})


def test_a_worker_index_outside_the_pool_is_refused() -> None:
    with pytest.raises(SettingsError, match=r"PROXY_WORKER_INDEX must be between 0 and PROXY_WORKERS - 1 \(1\), got 2"):
        settings.load({**BASE, "PROXY_WORKERS": "2", "PROXY_WORKER_INDEX": "2"})


def test_restart_budget_absorbs_a_few_exits_per_window() -> None:
    budget = RestartBudget(limit=2, window_s=60.0)
    assert budget.allow(0.0) and budget.allow(10.0)
    assert not budget.allow(20.0)  # three within a minute: a crash loop
    assert budget.allow(85.0)  # 0 and 10 have left the window; 20 and 85 remain


def test_restart_back_off_grows_and_is_capped() -> None:
    assert [restart_delay_s(n) for n in (0, 1, 2, 20)] == [0.5, 1.0, 1.5, 5.0]


def test_port_probe_sees_a_reuseport_listener() -> None:
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert port_taken("127.0.0.1", port)
    assert not port_taken("127.0.0.1", port)
