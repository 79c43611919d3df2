"""WireGuard protocol constants, in one place, with the whitepaper's names.

Values follow the Linux kernel's drivers/net/wireguard/messages.h; where
wireguard-go differs the kernel wins and the difference is noted.
"""

# Noise construction and WireGuard identifiers (whitepaper §5.4).
CONSTRUCTION = b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s"
IDENTIFIER = b"WireGuard v1 zx2c4 Jason@zx2c4.com"
LABEL_MAC1 = b"mac1----"
LABEL_COOKIE = b"cookie--"

# Sizes in bytes.
KEY_LEN = 32
HASH_LEN = 32
MAC_LEN = 16
TAG_LEN = 16
TIMESTAMP_LEN = 12
COOKIE_LEN = 16
COOKIE_NONCE_LEN = 24

# Message types (little-endian u32 whose upper three bytes are zero).
MESSAGE_INITIATION = 1
MESSAGE_RESPONSE = 2
MESSAGE_COOKIE_REPLY = 3
MESSAGE_DATA = 4

MESSAGE_INITIATION_SIZE = 148
MESSAGE_RESPONSE_SIZE = 92
MESSAGE_COOKIE_REPLY_SIZE = 64
MESSAGE_DATA_HEADER_SIZE = 16
MESSAGE_DATA_MIN_SIZE = MESSAGE_DATA_HEADER_SIZE + TAG_LEN  # a keepalive
MESSAGE_PADDING_MULTIPLE = 16

# Counters. The kernel's REJECT_AFTER_MESSAGES is U64_MAX - COUNTER_WINDOW_SIZE - 1
# (wireguard-go uses 2^64 - 2^13 - 1); we follow the kernel.
COUNTER_BITS_TOTAL = 8192
COUNTER_REDUNDANT_BITS = 64
COUNTER_WINDOW_SIZE = COUNTER_BITS_TOTAL - COUNTER_REDUNDANT_BITS  # 8128
REKEY_AFTER_MESSAGES = 1 << 60
REJECT_AFTER_MESSAGES = (1 << 64) - 1 - COUNTER_WINDOW_SIZE - 1

# Timers, in seconds.
REKEY_AFTER_TIME = 120.0
REJECT_AFTER_TIME = 180.0
REKEY_ATTEMPT_TIME = 90.0
REKEY_TIMEOUT = 5.0
REKEY_TIMEOUT_JITTER_MAX = 1.0 / 3.0  # the kernel's HZ / 3
KEEPALIVE_TIMEOUT = 10.0
MAX_TIMER_HANDSHAKES = int(REKEY_ATTEMPT_TIME / REKEY_TIMEOUT)  # 18
ZERO_KEY_MATERIAL_AFTER = REJECT_AFTER_TIME * 3  # 540 s
# An initiator rekeys on receive once its key is this old (kernel receive.c).
REKEY_ON_RECEIVE_AGE = REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT - REKEY_TIMEOUT  # 165 s

# Cookies and load.
COOKIE_SECRET_MAX_AGE = 120.0
COOKIE_SECRET_LATENCY = 5.0
COOKIE_VALID_FOR = COOKIE_SECRET_MAX_AGE - COOKIE_SECRET_LATENCY  # 115 s
INITIATIONS_PER_SECOND = 50  # responder flood guard per peer (kernel noise.c)
MIN_INITIATION_INTERVAL = 1.0 / INITIATIONS_PER_SECOND
UNDER_LOAD_AFTER_TIME = 1.0
# The kernel is under load while its handshake queue holds >= 4096/8 entries,
# wireguard-go at >= 1024/8. A sans-I/O core has no queue, so it counts the
# handshake messages of the last second instead, against wireguard-go's 128
# (a Python responder handles a few thousand per second at most); an adapter
# with a real queue may report its backlog too.
UNDER_LOAD_HANDSHAKES_PER_SECOND = 128
MAX_QUEUED_INCOMING_HANDSHAKES = 1024

# Per-source handshake rate limit (kernel ratelimiter.c).
RATELIMITER_PACKETS_PER_SECOND = 20
RATELIMITER_PACKETS_BURSTABLE = 5
RATELIMITER_GC_INTERVAL = 1.0
RATELIMITER_MAX_ENTRIES = 8192 * 8

# Limits.
MAX_STAGED_PACKETS = 128
MAX_PEERS = 1 << 20
DEFAULT_MTU = 1420

# TAI64N (kernel noise.c): label base 2^62 + 10, nanoseconds rounded down to a
# multiple of 2^24 so timestamps leak less about the sender's clock.
TAI64_BASE = (1 << 62) + 10
TAI64N_WHITENER = (1 << 24) - 1
