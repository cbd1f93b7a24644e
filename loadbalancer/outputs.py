"""The files a finished run leaves: the summary (``--result``) and the trace (``--trace``:
both nodes' samples and events, each job's runs, the summary), each written whole or
not at all."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

from loadbalancer.summary import Counted


class Finished(Counted, Protocol):
    result_path: Path | None
    trace_path: Path | None
    summary: dict[str, Any] | None

    def say(self, text: str) -> None: ...


def write(master: Finished) -> bool:
    """The summary and the trace files; False (and one line) if one cannot be written."""
    try:
        if master.result_path is not None and master.summary is not None:
            _write_json(master.result_path, master.summary)
        if master.trace_path is not None:
            nodes = {"master": {"samples": master.recorder.samples,
                                "events": master.recorder.events}}
            if master.peer_history.sessions:
                own = master.slave_trace
                nodes["slave"] = master.peer_history.timeline(
                    own.samples if own else [], own.events if own else [])
            _write_json(master.trace_path, {"start": master.start,
                                            "policy": master.config.policy,
                                            "summary": master.summary, "nodes": nodes,
                                            "runs": master.recorder.runs})
    except OSError as error:
        master.say(f"cannot write {error.filename}: {error.strerror}; the journal is kept, "
                   "so --resume writes it again")
        return False
    return True


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)
