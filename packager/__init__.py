"""Build side: turn a registry model into a verified, signed .edgepkg bundle."""
