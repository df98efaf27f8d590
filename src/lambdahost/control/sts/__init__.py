"""STS: temporary credentials for roles (AssumeRole, and the execution role of every function
environment), the session tokens that carry them, who signed a request, and the revocation of
a role's older sessions."""
