from amphora.cli import main

raise SystemExit(main())
