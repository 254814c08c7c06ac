"""Job scripts of the test bed. They run as files (``python -I -S PATH``), never
imported; ``zkleader.testing.daemons.DETECTOR`` is the overlap detector's path."""
