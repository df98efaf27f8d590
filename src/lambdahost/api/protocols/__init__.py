"""Wire protocols: rest-json, json and query (with its ec2 dialect), one module each."""
