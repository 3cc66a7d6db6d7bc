"""Networks of G-FRTM: plain nn.Modules, no file I/O."""
