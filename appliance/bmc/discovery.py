"""Find BMCs: ARP on directly attached networks, then IPMI (UDP 623) and Redfish probes.

``discover`` is the use case. On a network this host is directly attached to, an ARP
sweep (``appliance.bmc.arp``) finds the live hosts first and only those are probed; on a
routed network every address is probed. Each probed host is asked for IPMI (below) and for
its Redfish service root (``GET /redfish/v1/`` over HTTPS, no credentials); a BMC found
either way is recorded with the protocols it answered to.

The IPMI sweep is one asyncio UDP socket over the addresses.

Each address gets an RMCP/ASF Presence Ping and an IPMI Get Channel Authentication
Capabilities request (``appliance.bmc.protocol``). Either answer proves a BMC; together they
tell its IPMI versions, login methods and vendor. Sending is paced (``rate`` packets per
second, 0 = as fast as the socket takes them); an address that has not answered is asked
again ``retries`` times (the auth-caps request only), ``retry_after`` seconds after its
previous probe; the sweep ends
``timeout`` seconds after the last probe, or as soon as every address has answered both.

Pacing matters on a real LAN: every probe to an address without a neighbour entry costs an
ARP request, and Linux holds at most ``gc_thresh3`` (default 1024) neighbour entries, each
unanswered one for about 3 s. ``neighbour_budget`` says how fast a sweep may go.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import ipaddress
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from appliance.bmc import arp
from appliance.bmc import protocol as p
from appliance.drivers import netns
from appliance.drivers import redfish as rf
from appliance.errors import BmcError, UsageError
from appliance.state.model import Bmc
from appliance.state.store import MachineStore

NEIGHBOUR_TABLE_MAX = Path("/proc/sys/net/ipv4/neigh/default/gc_thresh3")
UNRESOLVED_NEIGHBOUR_LIFETIME = 3.0  # seconds: 3 ARP solicitations, 1 s apart (Linux defaults)
MAX_SWEEP_ADDRESSES = 1 << 20
RECV_BUFFER = 4 << 20
BATCH = 256  # probes sent between looks at the receive side when unpaced


@dataclass(frozen=True)
class SweepOptions:
    rate: int = 500  # packets per second; 0 = unpaced
    timeout: float = 1.0  # wait for answers after the last probe
    retries: int = 1  # probes again to addresses that did not answer
    retry_after: float = 0.5
    port: int = p.RMCP_PORT


@dataclass
class Found:
    """One BMC that answered, and what its answers said."""

    address: str
    pong: p.PresencePong | None = None
    auth: p.AuthCaps | None = None
    rtt: float | None = None
    mac: str | None = None  # from the ARP sweep
    redfish: rf.ServiceRoot | None = None

    @property
    def protocols(self) -> tuple[str, ...]:
        ipmi = self.pong is not None or self.auth is not None
        return tuple(n for n, ok in (("ipmi", ipmi), ("redfish", self.redfish)) if ok)

    @property
    def ipmi_versions(self) -> tuple[str, ...]:
        if self.auth is not None and self.auth.ipmi_versions:
            return self.auth.ipmi_versions
        return ()

    @property
    def auth_types(self) -> tuple[str, ...]:
        return self.auth.auth_types if self.auth is not None else ()

    @property
    def iana(self) -> int | None:
        return self.pong.iana if self.pong is not None else None

    @property
    def complete(self) -> bool:
        return self.pong is not None and self.auth is not None


@dataclass
class SweepResult:
    found: list[Found]
    probed: int
    packets: int
    elapsed: float
    send_errors: dict[str, int] = field(default_factory=dict)


def expand(networks: Sequence[ipaddress.IPv4Network]) -> list[str]:
    """The addresses to probe: hosts of each network, without duplicates, in order."""
    total = sum(n.num_addresses for n in networks)
    if total > MAX_SWEEP_ADDRESSES:
        raise UsageError(
            f"{total} addresses to probe: more than the {MAX_SWEEP_ADDRESSES} kpc sweeps at once",
            hint="give smaller networks (a /12 at most)",
        )
    seen: set[int] = set()
    out: list[str] = []
    for network in networks:
        first, last = int(network.network_address), int(network.broadcast_address)
        if network.prefixlen < 31:  # no network and broadcast addresses
            first, last = first + 1, last - 1
        for number in range(first, last + 1):
            if number not in seen:
                seen.add(number)
                out.append(socket.inet_ntoa(number.to_bytes(4, "big")))
    return out


def neighbour_budget(networks: Sequence[ipaddress.IPv4Network], table_max: int) -> int | None:
    """The highest rate (packets/s) that keeps unresolved ARP entries within 3/4 of the table.

    The rest is left for the host's real neighbours. None when no network needs ARP
    (loopback). Two packets per address. With Linux's default 1024 entries: 512/s.
    """
    if all(n.is_loopback for n in networks):
        return None
    addresses_per_second = (table_max * 3 / 4) / UNRESOLVED_NEIGHBOUR_LIFETIME
    return max(1, int(addresses_per_second * 2))


def neighbour_table_max() -> int:
    try:
        return int(NEIGHBOUR_TABLE_MAX.read_text().strip())
    except (OSError, ValueError):
        return 1024


class _Sweep(asyncio.DatagramProtocol):
    def __init__(
        self,
        targets: list[str],
        options: SweepOptions,
        on_found: Callable[[Found], None] | None,
    ) -> None:
        self.options = options
        self.targets = targets
        self.wanted = set(targets)
        self.found: dict[str, Found] = {}
        self.sent_at: dict[str, float] = {}
        self.on_found = on_found
        self.packets = 0
        self.errors: collections.Counter[str] = collections.Counter()
        self.all_answered = asyncio.Event()
        self.answered: dict[str, asyncio.Event] = {}  # hosts probed one by one (live hosts)

    # --- receiving ---
    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        host, port = str(addr[0]), addr[1]
        if host not in self.wanted or port != self.options.port:
            return
        reply = p.parse_reply(data)
        if reply is None:
            return
        entry = self.found.get(host)
        new = entry is None
        if entry is None:
            entry = self.found[host] = Found(host)
            sent = self.sent_at.get(host)
            entry.rtt = time.monotonic() - sent if sent is not None else None
        if isinstance(reply, p.PresencePong):
            entry.pong = entry.pong or reply
        else:
            entry.auth = entry.auth or reply
        if new and self.on_found is not None:
            self.on_found(entry)
        waiter = self.answered.get(host)
        if waiter is not None and entry.complete:
            waiter.set()
        if (
            self.targets
            and len(self.found) == len(self.wanted)
            and all(f.complete for f in self.found.values())
        ):
            self.all_answered.set()

    def error_received(self, exc: Exception) -> None:  # ICMP errors: nobody there
        return

    # --- sending ---
    async def send_all(self, sock: socket.socket) -> None:
        """First probes in order, paced; second chances for the silent ones when due."""
        options = self.options
        port = options.port
        pairs = [(p.presence_ping(seq), p.get_channel_auth_caps(seq)) for seq in range(64)]
        retries: collections.deque[tuple[float, str, int]] = collections.deque()
        fresh = iter(self.targets)
        found, sent_at = self.found, self.sent_at
        start = time.monotonic()
        count = 0
        while True:
            now = time.monotonic()
            if options.rate:
                budget = int((now - start) * options.rate) + 2 - self.packets
                if budget < 2:
                    await asyncio.sleep(max(0.001, (2 - budget) / options.rate))
                    continue
            else:
                budget = 2 * BATCH
            sent_any = False
            while budget > 0:
                if retries and retries[0][0] <= now:
                    _due, host, attempt = retries.popleft()
                    if host in found:
                        continue
                    packets: tuple[bytes, ...] = pairs[count & 63][1:]  # auth caps only
                else:
                    host = next(fresh, "")
                    if not host:
                        break
                    attempt, packets = 0, pairs[count & 63]
                    sent_at[host] = now
                count += 1
                budget -= len(packets)
                for packet in packets:
                    try:
                        sock.sendto(packet, (host, port))
                        self.packets += 1
                    except OSError as exc:
                        await self._send_error(sock, exc, packet, (host, port))
                sent_any = True
                if attempt < options.retries:
                    retries.append((now + options.retry_after, host, attempt + 1))
            if not sent_any:
                if not retries:
                    return
                await asyncio.sleep(max(0.0, retries[0][0] - time.monotonic()))
            else:
                await asyncio.sleep(0)  # let the receive side run

    async def probe_live(self, sock: socket.socket, host: str) -> None:
        """Probe one host known to be alive (it answered ARP): both probes, the auth-caps
        request again after ``retry_after`` while it has not answered, then wait at most
        ``timeout`` for both answers."""
        options = self.options
        self.wanted.add(host)
        self.sent_at[host] = time.monotonic()
        done = self.answered[host] = asyncio.Event()
        packets = (p.presence_ping(self.packets & 63), p.get_channel_auth_caps(self.packets & 63))
        for attempt in range(options.retries + 1):
            for packet in packets if attempt == 0 else packets[1:]:
                try:
                    sock.sendto(packet, (host, options.port))
                    self.packets += 1
                except OSError as exc:
                    await self._send_error(sock, exc, packet, (host, options.port))
            wait = options.retry_after if attempt < options.retries else options.timeout
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), wait)
            if done.is_set():
                return

    async def _send_error(
        self, sock: socket.socket, exc: OSError, packet: bytes, destination: tuple[str, int]
    ) -> None:
        if isinstance(exc, BlockingIOError):  # the send buffer is full: wait for room
            # (not loop.sock_sendto: the socket belongs to the datagram transport, and
            # asyncio refuses that; probes waiting for ARP on a real LAN fill the buffer)
            await asyncio.sleep(0.05)
            try:
                sock.sendto(packet, destination)
            except OSError as again:
                self.errors[again.strerror or str(again)] += 1
                return
            self.packets += 1
            return
        if exc.errno == errno.ENOBUFS:  # neighbour table or queue full: slow down
            await asyncio.sleep(0.01)
        self.errors[exc.strerror or str(exc)] += 1


async def sweep(
    networks: Sequence[ipaddress.IPv4Network],
    options: SweepOptions = SweepOptions(),
    on_found: Callable[[Found], None] | None = None,
) -> SweepResult:
    return await sweep_addresses(expand(networks), options, on_found)


async def sweep_addresses(
    targets: list[str],
    options: SweepOptions = SweepOptions(),
    on_found: Callable[[Found], None] | None = None,
) -> SweepResult:
    """The IPMI sweep of these addresses."""
    started = time.monotonic()
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECV_BUFFER)
        sock.bind(("0.0.0.0", 0))
    except OSError as exc:
        sock.close()
        raise BmcError(f"cannot open a UDP socket for discovery: {exc.strerror}") from None
    protocol = _Sweep(targets, options, on_found)
    transport, _ = await loop.create_datagram_endpoint(lambda: protocol, sock=sock)
    try:
        if targets:
            await protocol.send_all(sock)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(protocol.all_answered.wait(), options.timeout)
    finally:
        transport.close()
    if targets and protocol.packets == 0 and protocol.errors:
        reason, _count = protocol.errors.most_common(1)[0]
        raise BmcError(
            f"could not send a single probe: {reason}",
            hint="check the host's routes to the BMC networks ('ip route get ADDRESS')",
        )
    found = sorted(protocol.found.values(), key=lambda f: ipaddress.ip_address(f.address))
    return SweepResult(
        found=found,
        probed=len(targets),
        packets=protocol.packets,
        elapsed=time.monotonic() - started,
        send_errors=dict(protocol.errors),
    )


def _udp_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECV_BUFFER)
        sock.bind(("0.0.0.0", 0))
    except OSError as exc:
        sock.close()
        raise BmcError(f"cannot open a UDP socket for discovery: {exc.strerror}") from None
    return sock


def run_sweep(
    networks: Sequence[ipaddress.IPv4Network],
    options: SweepOptions = SweepOptions(),
    on_found: Callable[[Found], None] | None = None,
) -> SweepResult:
    return asyncio.run(sweep(networks, options, on_found))


# --- the use case: ARP first, then IPMI and Redfish --------------------------------------

# a host that has just answered ARP on the segment answers IPMI within milliseconds
LIVE_HOST_TIMEOUT = 0.5
LIVE_HOST_RETRY_AFTER = 0.2
REDFISH_FANOUT = 256  # TLS handshakes at once


@dataclass(frozen=True)
class DiscoverOptions:
    udp: SweepOptions = SweepOptions()
    arp: arp.ArpOptions | None = field(default_factory=arp.ArpOptions)  # None: no ARP
    redfish: bool = True
    redfish_port: int = rf.REDFISH_PORT
    redfish_timeout: float = 2.0


@dataclass
class Discovery:
    found: list[Found]
    probed: int  # addresses in the networks
    arp_asked: int  # of which on directly attached links (ARP swept)
    arp_alive: int  # of which answered ARP
    links: list[str]  # the links ARP went out on
    packets: int  # IPMI probes sent
    elapsed: float
    send_errors: dict[str, int] = field(default_factory=dict)


def host_links() -> list[arp.Link]:
    """This host's interfaces with an IPv4 address (``ip -j -4 address``)."""
    out = []
    for name, cidr in netns.ipv4_addresses():
        out.append(arp.Link(name, ipaddress.IPv4Interface(cidr)))
    return out


async def discover(
    networks: Sequence[ipaddress.IPv4Network],
    options: DiscoverOptions = DiscoverOptions(),
    links: Sequence[arp.Link] = (),
) -> Discovery:
    """ARP sweeps of the attached parts, each host probed as soon as it answers ARP; the
    routed parts swept as before; IPMI and Redfish probes side by side."""
    started = time.monotonic()
    targets = expand(networks)
    by_link, routed = arp.attached(targets, links) if options.arp else ({}, list(targets))
    alive: dict[str, str] = {}
    roots: dict[str, rf.ServiceRoot] = {}
    errors: collections.Counter[str] = collections.Counter()
    udp = options.udp
    live_options = SweepOptions(  # a host that just answered ARP answers IPMI in milliseconds
        rate=udp.rate,
        timeout=min(udp.timeout, LIVE_HOST_TIMEOUT),
        retries=udp.retries,
        retry_after=min(udp.retry_after, LIVE_HOST_RETRY_AFTER),
        port=udp.port,
    )
    loop = asyncio.get_running_loop()
    sock = _udp_socket()
    live = _Sweep([], live_options, None)
    transport, _ = await loop.create_datagram_endpoint(lambda: live, sock=sock)
    tasks: list[asyncio.Future[None]] = []
    limit = asyncio.Semaphore(REDFISH_FANOUT)

    async def root(address: str) -> None:
        async with limit:
            found = await rf.probe_one(address, options.redfish_port, options.redfish_timeout)
        if found is not None:
            roots[address] = found

    def on_alive(address: str, mac: str) -> None:
        alive[address] = mac
        tasks.append(asyncio.ensure_future(live.probe_live(sock, address)))
        if options.redfish:
            tasks.append(asyncio.ensure_future(root(address)))

    try:
        routed_sweep = sweep_addresses(routed, udp)
        routed_roots = [root(a) for a in routed] if options.redfish else []
        arp_sweeps = [
            arp.sweep(link, addrs, options.arp or arp.ArpOptions(), on_alive)
            for link, addrs in by_link.items()
        ]
        ipmi, arp_results, _ = await asyncio.gather(
            routed_sweep, asyncio.gather(*arp_sweeps), asyncio.gather(*routed_roots)
        )
        await asyncio.gather(*tasks)  # the last live hosts' probes
    finally:
        for task in tasks:
            task.cancel()
        transport.close()
    for result in arp_results:
        errors.update(result.errors)
    errors.update(ipmi.send_errors)
    errors.update(live.errors)
    found = {f.address: f for f in ipmi.found}
    found.update(live.found)
    for address, service in roots.items():
        found.setdefault(address, Found(address)).redfish = service
    for address, entry in found.items():
        entry.mac = alive.get(address)
    return Discovery(
        found=sorted(found.values(), key=lambda f: ipaddress.IPv4Address(f.address)),
        probed=len(targets),
        arp_asked=sum(len(a) for a in by_link.values()),
        arp_alive=len(alive),
        links=[link.name for link in by_link],
        packets=ipmi.packets + live.packets,
        elapsed=time.monotonic() - started,
        send_errors=dict(errors),
    )


def run_discover(
    networks: Sequence[ipaddress.IPv4Network],
    options: DiscoverOptions = DiscoverOptions(),
    links: Sequence[arp.Link] = (),
) -> Discovery:
    return asyncio.run(discover(networks, options, links))


def record(store: MachineStore, result: Discovery, now: float) -> dict[str, str]:
    """Record what was found, with the protocols each BMC answered; pin certificates seen
    for the first time (a different one than pinned is reported, never replaced)."""
    pinned = {b.address: b.tls_fingerprint for b in store.list_bmcs()}
    notes: dict[str, str] = {}
    bmcs = [
        Bmc(
            found.address,
            ipmi_versions=found.ipmi_versions,
            auth_types=found.auth_types,
            iana=found.iana,
            protocols=found.protocols,
        )
        for found in result.found
    ]
    store.record_bmcs(bmcs, now)  # one commit (one fsync) for all, not one per BMC
    for found in result.found:
        seen = found.redfish.fingerprint if found.redfish else None
        if seen is None:
            continue
        known = pinned.get(found.address)
        if known is None:
            store.pin_bmc_cert(found.address, seen)
        elif known != seen:
            notes[found.address] = (
                "TLS certificate CHANGED since it was pinned (kpc will refuse to talk to it; "
                f"if the BMC's certificate was replaced: kpc bmc forget-cert {found.address})"
            )
    return notes
