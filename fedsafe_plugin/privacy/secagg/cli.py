"""`fedsafe keys`: provision a CKKS key set (secret context for clients, public one for the server)."""

from __future__ import annotations

import argparse


def _keys(args: argparse.Namespace) -> int:
    from fedsafe_plugin.privacy.secagg.ckks import COEFF_BITS, POLY_MODULUS, PUBLIC_FILE, SCALE_BITS, SECRET_FILE, write_keys

    key_id = write_keys(args.out, force=args.force)
    print(f"CKKS key set {key_id} (N={POLY_MODULUS}, coeff bits {list(COEFF_BITS)}, scale 2^{SCALE_BITS}, 128-bit security)")
    print(f"  {args.out}/{SECRET_FILE}: give to every client out of band (never to the server)")
    print(f"  {args.out}/{PUBLIC_FILE}: give to the server; set fedsafe.secagg.ckks-context to it (or to this folder)")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `keys` subcommand."""
    parser = subparsers.add_parser("keys", help="Create a CKKS key set for fedsafe.secagg.mode=ckks.")
    parser.add_argument("--out", required=True, help="Folder to write secret.ctx and public.ctx into.")
    parser.add_argument("--force", action="store_true", help="Replace an existing key set.")
    parser.set_defaults(handler=_keys)
