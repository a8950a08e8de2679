"""Unit tests: the progress view without a terminal (heartbeat lines)."""

import io

from multinode.inventory import parse_hosts
from multinode.progress import Progress, elapsed
from multinode.report import Reporter


def test_elapsed_reads_well():
    assert [elapsed(s) for s in (0, 59, 60, 185, 3725)] == ["0s", "59s", "1m00s", "3m05s", "1h02m"]


def test_heartbeat_lines_name_the_step_or_say_still_at_it():
    nodes = parse_hosts("198.18.0.10:198.19.0.10,198.18.0.11:198.19.0.11")
    for n in nodes:
        n.alias = f"rental{n.nid}"
    out = io.StringIO()
    progress = Progress(Reporter(nodes, stream=out), "verify", interval=1, tty=False)
    for n in nodes:
        progress.start(n)
    progress.line(nodes[1], "BEGIN python")
    progress.line(nodes[1], "[python] Resolved 3 packages")
    for state in progress.nodes.values():
        for running in [state, *state.steps.values()]:
            running.since -= 65
            running.beat -= 2
    progress.heartbeat()
    assert out.getvalue().splitlines() == ["verify       rental0  still at it after 1m05s",
                                           "verify       rental1  still in step python after 1m05s: Resolved 3 packages"]
    progress.finish(nodes[0], "ok")
    progress.heartbeat()  # none due: rental1's was just printed, rental0 is done
    assert len(out.getvalue().splitlines()) == 2


def test_the_last_output_is_the_running_steps_own():
    """A step that has printed nothing yet shows nothing: never the step before's last line."""
    from rich.console import Console

    nodes = parse_hosts("198.18.0.10:198.19.0.10")
    nodes[0].alias = "rental0"
    out = io.StringIO()
    progress = Progress(Reporter(nodes, stream=out), "bootstrap", interval=1, tty=False)
    progress.start(nodes[0])
    progress.line(nodes[0], "BEGIN python")
    progress.line(nodes[0], "[python] Resolved 3 packages")
    progress.line(nodes[0], "STEP python ok venv ready [1.0s]")
    progress.line(nodes[0], "BEGIN ray")

    def shown():
        console = Console(file=io.StringIO(), width=200)
        console.print(progress.table())
        return console.file.getvalue()

    assert "Resolved 3 packages" not in shown() and " ray " in shown()
    state = progress.nodes["rental0"]
    state.steps["ray"].since -= 65
    state.steps["ray"].beat -= 2
    progress.heartbeat()
    assert out.getvalue().splitlines() == ["bootstrap    rental0  still in step ray after 1m05s"]
    progress.line(nodes[0], "[ray] starting the head")
    assert "starting the head" in shown()


def test_steps_that_run_at_once_each_show_and_beat_with_their_own_lines():
    from rich.console import Console

    nodes = parse_hosts("198.18.0.10:198.19.0.10")
    nodes[0].alias = "rental0"
    out = io.StringIO()
    progress = Progress(Reporter(nodes, stream=out), "bootstrap", interval=1, tty=False)
    progress.start(nodes[0])
    for line in ("BEGIN python", "BEGIN docker", "[python] Resolved 3 packages", "[docker] Get:1 http://deb",
                 "[python] STEP python ok faked by a tool", "BEGIN tools"):
        progress.line(nodes[0], line)
    state = progress.nodes["rental0"]
    assert state.step() == "python+docker+tools" and state.latest() == "STEP python ok faked by a tool"
    progress.line(nodes[0], "STEP python ok venv ready [1.0s]")  # the runner's own line ends it
    assert state.step() == "docker+tools" and state.latest() == "Get:1 http://deb"
    console = Console(file=io.StringIO(), width=200)
    console.print(progress.table())
    assert "docker+tools" in console.file.getvalue() and "Resolved" not in console.file.getvalue()
    state.steps["docker"].since -= 65
    state.steps["docker"].beat -= 2
    progress.heartbeat()
    assert out.getvalue().splitlines() == ["bootstrap    rental0  still in step docker after 1m05s: Get:1 http://deb"]
