"""The tests' view of live processes, from /proc: who runs, whose child, how much CPU."""

from __future__ import annotations

from pathlib import Path


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after "(comm)" (state, ppid, …; utime is [11], stime [12]),
    or None for a process that is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2 :].split()


def processes() -> dict[int, tuple[int, str]]:
    """Every live process (zombies excluded): its parent and its command line."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat(int(entry.name))
        try:  # a process may end while it is read
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if fields is not None and fields[0] != "Z":
            found[int(entry.name)] = (int(fields[1]), cmdline)
    return found


def children_of(pid: int) -> set[int]:
    """Every live descendant of `pid`."""
    parents = {p: ppid for p, (ppid, _) in processes().items()}
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {p for p, pp in parents.items() if pp in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    """Running or sleeping, not gone and not a zombie."""
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z"


def cpu_ticks(pid: int) -> int:
    """The CPU time a process has used, user and system, in clock ticks (0 once it is gone)."""
    fields = _stat(pid)
    return 0 if fields is None else int(fields[11]) + int(fields[12])
