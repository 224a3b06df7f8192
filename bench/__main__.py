"""`python -m bench`: run the whole benchmark on a fresh private stack."""

from bench.run import main

raise SystemExit(main())
