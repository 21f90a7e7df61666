"""``stdout``: a readable block per run on the process's standard output."""

from __future__ import annotations

from compiler.ir import JobDef
from runtime.delivery import ChannelContext, DeliveryOutcome, format_duration, stdout_stream
from runtime.store import RunRow


def format_block(job: JobDef, run: RunRow, output: str, when: str) -> str:
    """``=== job | status | time | duration | run id ===``, then the output (and the error of
    a failed run), then a blank line."""
    head = (f"=== {job.name} | {run.status} | {when} | {format_duration(run.duration_ms)}"
            f" | run {run.id[:8]} ===")
    lines = [head]
    if output:
        lines.append(output.rstrip("\n"))
    if run.error:
        lines.append(f"error: {run.error}")
    if not output and not run.error:
        lines.append("(no output)")
    return "\n".join(lines) + "\n\n"


class StdoutChannel:
    """Writes each run as one block (one ``write`` call, so blocks of concurrent deliveries
    do not interleave)."""

    name = "stdout"
    max_attempts = 1  # a closed stdout will not reopen

    def __init__(self, context: ChannelContext) -> None:
        self.context = context

    async def route(self, channel: str, job: JobDef, run: RunRow, output: str
                    ) -> DeliveryOutcome:
        """Print the block."""
        when = (run.finished_at or self.context.clock.now()).isoformat(timespec="seconds")
        block = format_block(job, run, output, when)
        stream = stdout_stream(self.context)
        try:
            stream.write(block)
            stream.flush()
        except (OSError, ValueError) as e:  # closed or broken pipe
            return DeliveryOutcome.failure(f"cannot write to standard output: {e}")
        return DeliveryOutcome.success(response=f"{len(block)} characters written")
