"""Code that runs INSIDE the kernel (stdlib and IPython only; sent as source at kernel start).

ipykernel stamps output from threads with whatever cell is running when they print. After
:func:`patch_threads`, a thread writes with the parent header of the code that started it (a
thread pool's work item: of the code that submitted it), so the host can tell a thread of an
earlier cell from the running cell's own output (``session.py``). Needs ``set_thread_parent`` /
``reset_thread_parent`` on the streams and the display publisher (ipykernel 7 has them); without
them nothing changes.

The host runs this source in a module of its own and then calls ``patch_threads()``.
"""


def patch_threads():
    import sys
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from IPython import get_ipython

    original_start, original_submit = threading.Thread.start, ThreadPoolExecutor.submit
    if getattr(original_start, "_l0_parent_patch", False):
        return

    def parents():
        pubs = [sys.stdout, sys.stderr, getattr(get_ipython(), "display_pub", None)]
        # ipykernel's OutStream / display publisher (what hasattr finds), not the declared TextIO
        return [(p, p.parent_header) for p in pubs if hasattr(p, "reset_thread_parent")]  # type: ignore[union-attr]

    def start(self, *args, **kwargs):
        headers = parents()
        if headers:
            run = self.run

            def run_with_parent():
                for pub, header in headers:
                    pub.set_thread_parent(header)
                return run()

            self.run = run_with_parent
        return original_start(self, *args, **kwargs)

    def submit(self, fn, /, *args, **kwargs):
        headers = parents()  # a pool's work item belongs to the cell that submitted it

        def call_with_parent(*a, **k):
            tokens = [(pub, pub.set_thread_parent(header)) for pub, header in headers]
            try:
                return fn(*a, **k)
            finally:
                for pub, token in reversed(tokens):
                    pub.reset_thread_parent(token)

        return original_submit(self, call_with_parent if headers else fn, *args, **kwargs)

    # Patching the classes in the kernel's process is the point of this module.
    start._l0_parent_patch = True  # type: ignore[attr-defined]
    threading.Thread.start, ThreadPoolExecutor.submit = start, submit  # type: ignore[method-assign]
