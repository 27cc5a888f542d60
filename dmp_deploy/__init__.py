"""dmp-deploy: an idempotent reconciler for the Digital Marketplace on AWS ECS Fargate."""
