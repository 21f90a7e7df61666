"""Built-in delivery channels (SPEC §5.8), built on the public interface in
``runtime.delivery`` (:class:`~runtime.delivery.Channel`, :class:`~runtime.delivery.
DeliveryOutcome`, :class:`~runtime.delivery.ChannelContext`).

The runtime imports each one by dotted path on first use
(``runtime.delivery.BUILTIN_CHANNEL_FACTORIES``); nothing here runs at import time.

- ``stdout``   — :class:`stdlib.channels.stdout.StdoutChannel`
- ``log_file`` — :class:`stdlib.channels.log_file.LogFileChannel`
- ``webhook``  — :class:`stdlib.channels.webhook.WebhookChannel`
- ``slack``    — :class:`stdlib.channels.slack.SlackChannel`
- ``email``    — :class:`stdlib.channels.smtp.EmailChannel`
"""
