"""The emulated Google side of the local Cloud SQL instance: what the Cloud SQL Python
Connector talks to (Admin API, certificates, mTLS proxy), run as daemons (`emulator`)."""
