"""`_()`: user-facing strings through Slicer's translation (`slicer.i18n.tr`) when it is
there, unchanged otherwise (plain Python, tests without Slicer's GUI layer)."""


def _(text: str) -> str:
    try:
        from slicer.i18n import tr
    except ImportError:
        return text
    return tr(text)
