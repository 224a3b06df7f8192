"""`python -m bench.query`: the query benchmark (see bench/README.md, "Query benchmark")."""

from bench.query.run import main

raise SystemExit(main())
