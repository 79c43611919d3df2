"""The C hot path and its Python side: an adapter around the core, which never imports it.

The C (hotpath.c: sealing and opening batches; offload.c: TUN offloads; udpio.c: recvmmsg and
sendmmsg; batch.c: runs of a batch) is compiled by build.py through cffi into `pywg.native._hotpath`
(`pip install -e .`); hotpath.py gives it Python types and hands the device `CCrypto`, the C
implementation of the core's `Crypto`. `PYWG_NO_EXT=1` keeps the pure-Python reference instead.
"""
