"""The C hot path and its Python side: an adapter around the core, which never imports it.

The C is compiled by build.py through cffi into `pywg.native._hotpath` (`pip install -e .`):
hotpath.c seals and opens batches, sharing large ones with the crypto threads of threads.c;
offload.c splits and merges TUN super-packets; udpio.c does recvmmsg and sendmmsg; batch.c finds
the runs of a batch. loader.py loads the extension and says whether the engine may use it
(`PYWG_NO_EXT=1` keeps the pure-Python reference); hotpath.py gives the C Python types and hands
the device `CCrypto`, the C implementation of the core's `Crypto`.
"""
