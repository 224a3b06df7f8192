"""Product analytics: goals, funnels and retention cohorts, served as ProductService."""
