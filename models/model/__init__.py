"""What learns: the temporal network and its heads, the text encoder and its tuning, the risk trees."""
