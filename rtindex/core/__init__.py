"""The index itself: growable tables (``storage``), the engine state the paths share
(``engine``), the insert, delete-repair and search paths (``insert``, ``repair``,
``search``, ``lockstep``), scorers, validation rules, the single writer, and the GPU
backend (``gpu``). ``Index`` (``core.index``) is the facade over them."""
