"""Generator (trunk + group branches), discriminators and the face-ID embedder."""
