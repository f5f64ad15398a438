from selfrag.cli import run_main, setup_logging
from selfrag.quickstart.run import main

setup_logging()
raise SystemExit(run_main(main, None))
