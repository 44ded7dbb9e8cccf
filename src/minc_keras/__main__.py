"""``python -m minc_keras`` runs the command line."""

from minc_keras.cli.main import main

raise SystemExit(main())
