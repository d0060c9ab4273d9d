"""The service and command-line interfaces of Chainsight."""
