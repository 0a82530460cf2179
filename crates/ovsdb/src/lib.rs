//! OVSDB (RFC 7047) client: values, codec, transactions, monitors, cache, connection manager
