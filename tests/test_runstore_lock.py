"""results.json is shared by every command of a run: concurrent updates must all land."""

from __future__ import annotations

import json
import multiprocessing as mp

from bbi.runstore import RunDir

N = 40


def _writer(path: str, section: str, entries: bool) -> None:
    run = RunDir(path)
    for i in range(N):
        if entries:
            run.update_results_entry(section, f"k{i}", i)
        else:
            # A read-modify-write of a whole section, the way a command extends a list;
            # the other process rewrites the file between our read and our write unless
            # update_results holds the lock for the whole of it.
            run.update_results(section, i)
            run.update_manifest(**{section: {f"k{i}": i}})


def _race(tmp_path, entries: bool) -> dict:
    run = RunDir(tmp_path / "run", create=True)
    run.update_results("suite", {"n": 1})
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(run.path), s, entries)) for s in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    return json.loads(run.results_path.read_text())


def test_two_processes_updating_entries_lose_nothing(tmp_path):
    res = _race(tmp_path, entries=True)
    assert res["suite"] == {"n": 1}
    for section in ("a", "b"):
        assert res[section] == {f"k{i}": i for i in range(N)}


def test_two_processes_updating_sections_lose_nothing(tmp_path):
    res = _race(tmp_path, entries=False)
    assert res["suite"] == {"n": 1} and res["a"] == N - 1 and res["b"] == N - 1
    man = RunDir(tmp_path / "run").manifest()
    for section in ("a", "b"):
        assert man[section] == {f"k{i}": i for i in range(N)}
