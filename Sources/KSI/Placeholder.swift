enum _PlaceholderKSI {}
