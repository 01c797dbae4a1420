"""``python -m streamer.config``: print README's settings table, generated from the declarations."""

import sys

from streamer.config.loading import markdown_table

sys.stdout.write(markdown_table())
