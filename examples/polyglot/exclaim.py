import spry


def handler(req: spry.Request, res: spry.Response) -> None:
    """Appends '!' to the payload, in place when there is room."""
    p = req.payload
    room = res.buffer()
    n = len(p)
    room[n:n + 1] = b"!"
    res.set_len(n + 1)
    print(f"exclaimed request {req.id} ({n} bytes)")
