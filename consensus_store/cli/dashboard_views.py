"""The dashboard's frame: pure functions of a ``ClusterSnapshot`` (and the UI's focus/pause).

Rendered by rich Live full-screen, or printed once (``--once``); tested by rendering to a
fixed-width ``Console(record=True)``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterable, Sequence

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from consensus_store.cli.dashboard_coordination import Coordination
from consensus_store.cli.dashboard_model import COUNTERS, ClusterSnapshot, NodeRates
from consensus_store.cli.views import ROLE_STYLE, optional
from consensus_store.models import Role

PANELS = ("groups", "elections", "locks", "names", "sessions", "events")
ROWS, FOCUSED_ROWS = 6, 16
_BARS = "▁▂▃▄▅▆▇█"


@dataclass(frozen=True)
class UiState:
    focus: int = 0           # index into PANELS (tab moves it)
    paused: bool = False
    interval_s: float = 0.5
    note: str = ""           # e.g. why the last poll failed (the frame before it stays up)

    @property
    def focused(self) -> str:
        return PANELS[self.focus % len(PANELS)]


def sparkline(values: Sequence[float], width: int = 40) -> str:
    """One character per sample (the last ``width``), scaled to the largest."""
    values = list(values)[-width:]
    if not values:
        return ""
    top = max(values)
    if top <= 0:
        return _BARS[0] * len(values)
    return "".join(_BARS[min(len(_BARS) - 1, int(v / top * (len(_BARS) - 1) + 0.5))]
                   for v in values)


def uptime(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    whole = int(seconds)
    if whole >= 86400:
        return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"
    if whole >= 3600:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    if whole >= 60:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole}s"


def rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}" if value < 100 else f"{value:.0f}"


def header(snapshot: ClusterSnapshot, ui: UiState) -> Panel:
    quorum = Text(f"quorum {snapshot.quorum_text}",
                  style="bold green" if snapshot.quorum else "bold red")
    replicas = f" + {snapshot.replicas} replica{'s' if snapshot.replicas > 1 else ''}"
    size = f"{snapshot.voters} voters" + (replicas if snapshot.replicas else "")
    line = Text.assemble(
        ("consensus-store  ", "bold"), f"{size}  ", quorum,
        f"  leader {snapshot.leader or '-'}  term {snapshot.term}  revision {snapshot.revision}")
    clock = time.strftime("%H:%M:%S", time.localtime(snapshot.wall_time))
    state = "PAUSED" if ui.paused else f"every {ui.interval_s:g}s"
    if ui.note:
        state = f"{ui.note[:60]}  {state}"
    return Panel(line, subtitle=f"{clock}  {state}  q quit  p pause  tab focus",
                 subtitle_align="right")


def nodes_table(snapshot: ClusterSnapshot) -> Table:
    table = Table(expand=True, title="nodes", title_justify="left")
    numeric = ("term", "commit", "applied", "lag", "log", "writes/s")
    for column in ("id", "role", "votes", "term", "commit", "applied", "lag", "log", "peers",
                   "uptime", "writes/s", "endpoint"):
        table.add_column(column, justify="right" if column in numeric else "left",
                         no_wrap=column in ("id", "role", "endpoint"))
    for node in snapshot.nodes:
        role = Text(node.role.value, style=ROLE_STYLE[node.role])
        if node.role is Role.DOWN:
            reason = Text(f"down: {node.reason or node.error or '?'}", style="red")
            table.add_row(node.id, role, node.votes, "", "", "", "", "", reason, "", "",
                          node.endpoint)
            continue
        rates = snapshot.rates.get(node.id, NodeRates())
        style = "bold" if node.id == snapshot.leader else None
        table.add_row(node.id, role, node.votes, str(node.term), str(node.commit_index),
                      str(node.applied_index), optional(node.lag), str(node.log_length),
                      ", ".join(node.connected_peers) or "-", uptime(node.uptime_s),
                      rate(rates.writes_s), node.endpoint,
                      style=style)
    return table


def rates_panel(snapshot: ClusterSnapshot, width: int = 50) -> Panel:
    source = ("node counters" if snapshot.rate_source == COUNTERS
              else "revision growth (log entries/s; nodes report no counters)")
    writes = Text.assemble(("writes/s ", "bold"), f"{rate(snapshot.writes_s):>8} ",
                           (sparkline(snapshot.writes_history, width), "green"))
    if snapshot.reads_history:
        reads = Text.assemble(("reads/s  ", "bold"), f"{rate(snapshot.reads_s):>8} ",
                              (sparkline(snapshot.reads_history, width), "cyan"))
    else:
        reads = Text("reads/s         - (needs node counters)", style="dim")
    return Panel(Group(writes, reads), title="rates", subtitle=f"from {source}",
                 subtitle_align="left")


def _panel(name: str, body: RenderableType, ui: UiState, note: str = "") -> Panel:
    focused = ui.focused == name
    title = f"[b]{name}[/b]" if focused else name
    return Panel(body, title=title, subtitle=note or None, subtitle_align="left",
                 border_style="magenta" if focused else "blue")


def _rows(table: Table, rows: Iterable[tuple[str, ...]], limit: int) -> Table:
    rows = list(rows)
    for row in rows[:limit]:
        table.add_row(*row)
    if len(rows) > limit:
        table.add_row(f"… {len(rows) - limit} more", *[""] * (len(table.columns) - 1))
    if not rows:
        table.add_row("(none)", *[""] * (len(table.columns) - 1))
    return table


def _grid(*columns: str) -> Table:
    table = Table(show_edge=False, box=None, pad_edge=False, expand=True)
    for column in columns:
        table.add_column(column, overflow="ellipsis", no_wrap=True)
    return table


def coordination_panels(coordination: Coordination, ui: UiState) -> list[Panel]:
    def limit(name: str) -> int:
        return FOCUSED_ROWS if ui.focused == name else ROWS
    note = "truncated" if coordination.truncated else ""
    if coordination.error:
        note = f"stale: {coordination.error}"[:60]
    groups = _rows(_grid("group", "members"),
                   ((g, str(n)) for g, n in coordination.groups), limit("groups"))
    elections = _rows(_grid("election", "leader", "token", "cands"),
                      ((e.name, e.leader or "-", optional(e.token), str(e.candidates))
                       for e in coordination.elections), limit("elections"))
    locks = _rows(_grid("lock", "holder", "token", "waiting"),
                  ((lock.name, optional(lock.holder_session), optional(lock.token),
                    str(lock.waiters)) for lock in coordination.locks), limit("locks"))
    names = _rows(_grid("name", "session", "node"),
                  ((n.name, optional(n.session), n.node or "-") for n in coordination.names),
                  limit("names"))
    if coordination.sessions is None:
        sessions: RenderableType = Text(coordination.sessions_note or "-", style="yellow")
    else:
        sessions = _rows(_grid("session", "ttl", "node", "keys"),
                         ((str(s.id), f"{s.ttl:g}", s.node or "-", str(s.keys))
                          for s in coordination.sessions), limit("sessions"))
    return [_panel("groups", groups, ui, note), _panel("elections", elections, ui),
            _panel("locks", locks, ui), _panel("names", names, ui),
            _panel("sessions", sessions, ui)]


def events_panel(snapshot: ClusterSnapshot, ui: UiState) -> Panel:
    limit = FOCUSED_ROWS if ui.focused == "events" else ROWS
    lines = [Text.assemble((time.strftime("%H:%M:%S ", time.localtime(e.wall_time)), "dim"),
                           (f"{e.kind:<8} ", "bold"), e.text)
             for e in snapshot.events[-limit:]]
    source = ("coordination from a watch, the rest from polls" if snapshot.watch_live
              else "from differences between polls (watch down)")
    return _panel("events", Group(*lines) if lines else Text("(none yet)"), ui, source)


def frame(snapshot: ClusterSnapshot, ui: UiState = UiState()) -> RenderableType:
    """The whole screen: header, nodes, rates, coordination panels, recent events."""
    panels = coordination_panels(snapshot.coordination, ui)
    return Group(header(snapshot, ui), nodes_table(snapshot), rates_panel(snapshot),
                 _side_by_side(panels[:3]), _side_by_side(panels[3:]),
                 events_panel(snapshot, ui))


def _side_by_side(panels: list[Panel]) -> Table:
    grid = Table.grid(expand=True)
    for _ in panels:
        grid.add_column(ratio=1)
    grid.add_row(*panels)
    return grid
