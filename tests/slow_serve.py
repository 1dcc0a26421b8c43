"""`radialog serve ...` whose in-process engine streams three characters per $SLOW_STREAM_DELAY_S seconds:
a server process with an answer still running when a test signals it (the tiny model answers in a blink)."""

from __future__ import annotations

import os
import sys

import pytest
from app_fixtures import slow_down_streaming

from radialog.cli import main

if __name__ == "__main__":
    slow_down_streaming(None, pytest.MonkeyPatch(), float(os.environ["SLOW_STREAM_DELAY_S"]))
    sys.exit(main(sys.argv[1:]))
