from semshare.cli.main import main

raise SystemExit(main())
