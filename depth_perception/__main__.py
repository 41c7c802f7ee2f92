from depth_perception.cli import main

raise SystemExit(main())
