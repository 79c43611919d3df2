"""The sans-I/O WireGuard protocol core: no sockets, TUN, clock or randomness of its own."""
