"""English descriptions of cron expressions (compiler.cron.describe_cron)."""

from __future__ import annotations

import pytest

from compiler.cron import describe_cron, parse_cron

DESCRIPTIONS = [
    ("0 9 * * *", "at 09:00 every day"),
    ("*/15 * * * *", "every 15 minutes"),
    ("0 18 * * 1", "at 18:00 on Monday"),
    ("0 0 1 * *", "at 00:00 on day 1 of the month"),
    ("*/5 * * * * *", "every 5 seconds"),
    ("* * * * *", "every minute"),
    ("* * * * * *", "every second"),
    ("0 * * * *", "every hour"),
    ("30 * * * *", "at minute 30 of every hour"),
    ("0,30 * * * *", "every 30 minutes"),
    ("*/7 * * * *", "every 7th minute of every hour"),
    ("0-10 * * * *", "at minutes 0-10 of every hour"),
    ("0 */2 * * *", "every 2 hours"),
    ("30 */6 * * *", "every 6 hours at minute 30"),
    ("0 9,12,18 * * *", "at 09:00, 12:00 and 18:00 every day"),
    ("0,30 9 * * *", "at 09:00 and 09:30 every day"),
    ("*/15 9-17 * * 1-5", "every 15 minutes from 09:00 to 17:45 on Monday to Friday"),
    ("0 9-17 * * mon-fri", "every hour from 09:00 to 17:00 on Monday to Friday"),
    ("* 9-17 * * *", "every minute from 09:00 to 17:59"),
    ("7,19,43 3,7,11,15 * * *", "at minutes 7, 19 and 43 past hours 3, 7, 11 and 15"),
    ("0 0 1 1 *", "at 00:00 on January 1"),
    ("0 0 29 2 *", "at 00:00 on February 29"),
    ("0 0 1,15 * *", "at 00:00 on days 1 and 15 of the month"),
    ("0 0 1 1-3 *", "at 00:00 on day 1 of the month in January to March"),
    ("0 12 * jan,jul *", "at 12:00 every day in January and July"),
    ("*/10 * * 6-8 *", "every 10 minutes in June to August"),
    ("0 0 * * 6,0", "at 00:00 on Saturday and Sunday"),
    ("0 0 * * sat-sun", "at 00:00 on Saturday and Sunday"),
    ("0 0 * * 0-2", "at 00:00 on Sunday to Tuesday"),
    ("0 0 1 * 1", "at 00:00 on day 1 of the month or on Monday"),
    ("0 0 */2 * 1", "at 00:00 on every 2nd day of the month if it is a Monday"),
    ("0 0 1-7 * */7", "at 00:00 on days 1-7 of the month if it is a Sunday"),
    ("0 0 L * *", "at 00:00 on the last day of the month"),
    ("0 0 LW * *", "at 00:00 on the last weekday of the month"),
    ("0 0 15W * *", "at 00:00 on the weekday nearest day 15 of the month"),
    ("0 0 * * 5L", "at 00:00 on the last Friday of the month"),
    ("0 0 * * fri#3", "at 00:00 on the third Friday of the month"),
    ("30 0 9 * * *", "at 09:00:30 every day"),
    ("30 * * * * *", "at second 30 of every minute"),
    ("*/5 0 9 * * *", "every 5 seconds during 09:00"),
    ("*/10 * 9-17 * * *", "every 10 seconds from 09:00 to 17:59"),
    ("0 0 12 1 1 * 2030", "at 12:00 on January 1 in 2030"),
    ("0 0 0 * * * 2030-2035", "at 00:00 every day in 2030-2035"),
    ("0 0 30 2 *", "at 00:00 on February 30 (never fires)"),
    ("@hourly", "every hour"),
    ("@daily", "at 00:00 every day"),
    ("@weekly", "at 00:00 on Sunday"),
    ("@monthly", "at 00:00 on day 1 of the month"),
    ("@yearly", "at 00:00 on January 1"),
]


@pytest.mark.parametrize(("text", "english"), DESCRIPTIONS, ids=[d[0] for d in DESCRIPTIONS])
def test_describe(text: str, english: str) -> None:
    expr, problems = parse_cron(text)
    assert expr is not None, problems
    assert describe_cron(expr) == english
