"""A process sandbox composed of two independent choices: which jail, and how its process starts.

The jail is runner/subprocess_jail.py or runner/bwrap_jail.py; the start is runner/starts.py's
ColdStart (a fresh interpreter) or WarmStart (a fork of a zygote). Every combination runs the same
way: the network policy first, with the egress proxy where the jail isolates the network, then the
shared supervision (runner/supervisor.py). The Docker backend (runner/docker_backend.py) is a
jail and a start of its own, run by the Docker engine.
"""

from runner.egress import behind_egress_proxy
from runner.jail import ProcessJail
from runner.outcome import SANDBOX_ERROR, Limits, Outcome
from runner.starts import ColdStart, WarmStart
from runner.supervisor import SandboxRun, run_in_sandbox


class Backend:
    """One jail with one way to start: what runner.run_script runs a script in."""

    def __init__(self, jail: ProcessJail, start: ColdStart | WarmStart) -> None:
        self.jail = jail
        self.start = start

    @property
    def name(self) -> str:
        return self.jail.name

    def workdir_parent(self, limits: Limits) -> str | None:
        """Where the run's working directory goes: None, the usual temporary directory."""
        return self.start.workdir_parent(self.jail, limits)

    def run(self, run: SandboxRun) -> Outcome:
        """Run in the sandbox, with the resources the jail makes for this kind of start around it."""
        # A warm start becomes a cold one where its zygote's jail cannot hold a jail of the run's own.
        start = self.start.for_run(self.jail, run)
        with start.resources(self.jail, run):
            return self.run_on_network(run, start)

    def run_on_network(self, run: SandboxRun, start: ColdStart | WarmStart) -> Outcome:
        """With the policy "internet" and an isolated network, behind the egress proxy.

        The proxy refuses what runner.addresses refuses, except inside the run's allowed networks, and
        its refused networks too.
        """
        if run.network not in ("internet", "none"):
            return Outcome(SANDBOX_ERROR, error=f"unknown network policy {run.network!r}")
        if not self.jail.isolates_network():
            if run.network == "none":
                why = "network 'none' needs the bwrap backend or a worker running as root; "
                why += f"this worker uses {self.name}"
                return Outcome(SANDBOX_ERROR, error=why)
            return run_in_sandbox(run, self.jail, start)
        if run.network == "none":
            return run_in_sandbox(run, self.jail, start)
        run.egress_socket = self.jail.egress_socket(run.workdir)
        return behind_egress_proxy(
            lambda: run_in_sandbox(run, self.jail, start),
            workdir=run.workdir,
            allowed_networks=run.allowed_networks,
            refused_networks=run.refused_networks,
            extra_ports=run.extra_ports,
        )
