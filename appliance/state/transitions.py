"""The store's named transitions (``record_request``, ``set_state``, ...), written once on
top of a backend's ``_transaction``: each is a rule from ``appliance.state.rules`` applied
in one transaction, so SQLite and etcd differ only in how a transaction happens."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from appliance.errors import StateError
from appliance.state import rules
from appliance.state.model import BootMode, Machine, MachineState
from appliance.state.store import Step, Transition

T = TypeVar("T")


def unknown_machine(mac: str) -> StateError:
    return StateError(
        f"no machine with MAC {mac} in the registry",
        hint="'kpc nodes list' shows the machines kpc has seen",
    )


class NamedTransitions:
    """Mixed into each backend, which provides ``_transaction``."""

    def _transaction(self, mac: str, step: Step[T], now: float) -> tuple[Machine | None, T]:
        """Run ``step`` on ``mac``'s record in one transaction; the record as stored
        afterwards and the step's result."""
        raise NotImplementedError

    def transact(self, mac: str, step: Step[T], now: float) -> T:
        return self._transaction(mac, step, now)[1]

    def _apply(
        self,
        mac: str,
        change: Callable[[Machine | None], Machine],
        now: float,
        events: tuple[tuple[str, Mapping[str, Any]], ...] = (),
    ) -> Machine:
        def step(m: Machine | None) -> Transition[None]:
            return Transition(change(m), None, events)

        stored = self._transaction(mac, step, now)[0]
        assert stored is not None
        return stored

    def _change(self, mac: str, change: Callable[[Machine], Machine], now: float) -> Machine:
        def known(m: Machine | None) -> Machine:
            if m is None:
                raise unknown_machine(mac)
            return change(m)

        return self._apply(mac, known, now)

    def record_request(
        self,
        mac: str,
        *,
        address: str | None,
        endpoint: str,
        now: float,
        uuid: str | None = None,
        hostname: str | None = None,
        serial: str | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> Machine:
        return self._apply(
            mac,
            lambda m: rules.seen(
                m,
                mac,
                address=address,
                endpoint=endpoint,
                now=now,
                uuid=uuid,
                hostname=hostname,
                serial=serial,
            ),
            now,
            (rules.request_event(endpoint, address, detail),),
        )

    def set_state(self, mac: str, state: MachineState, now: float) -> Machine:
        state = MachineState(state)
        return self._change(mac, lambda m: rules.with_state(m, state), now)

    def set_boot(self, mac: str, boot: BootMode, now: float) -> Machine:
        boot = BootMode(boot)
        return self._change(mac, lambda m: rules.with_boot(m, boot), now)

    def install_complete(self, mac: str, now: float) -> Machine:
        return self._change(mac, rules.install_completed, now)

    def check_in(self, mac: str, facts: dict[str, Any], address: str | None, now: float) -> Machine:
        def change(m: Machine | None) -> Machine:
            current = m if m is not None else rules.new_machine(mac, now, BootMode.LOCAL)
            return rules.checked_in(current, facts, address, now)

        return self._apply(mac, change, now, (rules.checkin_event(address),))

    def set_host_key(self, mac: str, host_key: str | None) -> Machine:
        return self._change(
            mac, lambda m: dataclasses.replace(m, ssh_host_key=host_key), time.time()
        )
