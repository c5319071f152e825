"""`python -m tfrec_video COMMAND ...`: the same as `tfrec-video COMMAND ...`."""

import sys

from tfrec_video.cli.main import main

sys.exit(main())
