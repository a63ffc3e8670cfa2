"""nn.Modules on token sequences [B, N, C], built on `attnreuse.ops`."""

__all__: list[str] = []
