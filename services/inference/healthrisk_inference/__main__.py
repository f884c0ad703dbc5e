"""`python -m healthrisk_inference --port 8080`: `healthrisk serve` without the rest of the CLI.

The umbrella `healthrisk` command imports every component's CLI (drift pulls in pyarrow),
~40 MB of resident memory that a serving container does not need.
"""

from healthrisk_inference.cli import app

app(prog_name="healthrisk-inference")
