"""Networks: backbone adapters over timm (``backbones``), heads and fusion modules."""
