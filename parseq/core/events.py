"""What other apps may follow in a run's life without the core knowing them."""

from django.dispatch import Signal

# Sent once a run has ended (completed, error or cancelled), with `run_id` and `status`,
# after the change is saved; receivers that do work elsewhere defer it to the commit.
run_finished = Signal()

# Sent once runs are `enqueued` for good (after the commit that created them), with `run_ids` and `if_refused`:
# "fail" (a user waits for the answer: a run the broker does not take ends in error) or "wait" (it stays enqueued,
# noted, and the workers' reaper sends it again). The actors' module (parseq/core/tasks.py) hands them to the
# workers. The core never imports its actors.
runs_enqueued = Signal()
