"""One transport message at a time, from the core's primitives: the reference per message that the
batch calls (C's and the pure-Python session's) are held to in tests."""

from __future__ import annotations

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from pywg.core.constants import MESSAGE_DATA, REJECT_AFTER_MESSAGES
from pywg.core.crypto import aead_nonce
from pywg.core.messages import DATA_HEADER
from pywg.core.replay import ReplayWindow


class OneAtATime:
    """A keypair's two keys and replay window, sealing and opening one message per call."""

    def __init__(self, sending_key: bytes, receiving_key: bytes, remote_index: int = 1) -> None:
        self._sealer = ChaCha20Poly1305(bytes(sending_key))
        self._opener = ChaCha20Poly1305(bytes(receiving_key))
        self.remote_index = remote_index
        self.sending_counter = 0
        self.replay = ReplayWindow()

    def seal(self, padded: bytes) -> bytes | None:
        """A transport message of an already padded plaintext with the next counter; None once
        the counters are spent."""
        counter = self.sending_counter
        if counter >= REJECT_AFTER_MESSAGES:
            return None
        self.sending_counter = counter + 1
        header = DATA_HEADER.pack(MESSAGE_DATA, self.remote_index, counter)
        return header + self._sealer.encrypt(aead_nonce(counter), padded, None)

    def open(self, counter: int, ciphertext: bytes) -> bytes | None:
        """The plaintext, or None if it does not authenticate. No replay check."""
        try:
            return self._opener.decrypt(aead_nonce(counter), ciphertext, None)
        except InvalidTag:
            return None
