from consensus_store.cli.main import main

raise SystemExit(main())
