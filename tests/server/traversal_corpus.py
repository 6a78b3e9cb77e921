"""Path traversal and encoding tricks for ids, tags and file names (used by the containment tests).

Each entry is a value a client could send as an image id, label tag or upload name, trying
to reach outside the studies folder, name a server path, or smuggle a separator past a
check. None of them is a safe name under `medvl.server.containment.NAME_RULE`.
"""

TRICKS = [
    # plain traversal
    "..", "../", "../..", "../outside/x", "../../outside/t", "../../../../../../etc/passwd", "x/../../../y",
    "lung2_image/../../outside", "labels/final/../../../x", "./../x", "....//x", "..../x", "...", "..;/x",
    ".../...//x", "x/..", "x/../..",
    # absolute paths and server files
    "/", "//", "/etc/passwd", "/dev/zero", "/dev/urandom", "/proc/self/environ", "/tmp", "/tmp/x", "//etc/passwd",
    "~", "~/.ssh/id_rsa", "~root/.bashrc",
    # windows separators and drives
    "..\\..\\x", "x\\..\\..\\y", "\\\\server\\share\\x", "C:\\Windows\\win.ini", "C:x", "c:/x",
    # URL encodings (a server that decodes twice would see separators)
    "%2e%2e%2fx", "%2e%2e/x", "..%2fx", "%2e%2e%5cx", "%252e%252e%252fx", "..%c0%afx", "..%255cx", "%2fetc%2fpasswd",
    # unicode look-alikes and normalisation tricks
    "\u2025/x", "\uff0e\uff0e\uff0fx", "\u2024\u2024/x", "x\u2215y", "x\u29f8y", "x\uff0fy", "\u0130", "lung2_im\u0430ge",
    # control characters, NUL truncation, whitespace
    "x\x00y", "..\x00/x", "x\ny", "x\ry", "x\ty", " x", "x ", "x y", "\x7f",
    # schemes and other syntax
    "file:///etc/passwd", "http://evil.example/x", "x:y", "x?y", "x#y", "x*", "x|y", "x;y", "$(id)", "`id`",
    # hidden, empty, over-long
    "", ".", ".hidden", "-rf", "_x", "x" * 129, "a/" * 40,
]
