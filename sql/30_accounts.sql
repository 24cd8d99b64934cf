-- The example app's accounts (examples/app.py): POST /transfers moves money between two of them
-- in one transaction; GET /accounts/total must always say 10 accounts and 10000.00.

CREATE TABLE account (
  id INT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  owner VARCHAR(100) NOT NULL,
  balance DECIMAL(12,2) NOT NULL,
  CONSTRAINT account_not_overdrawn CHECK (balance >= 0)
) DEFAULT CHARSET=utf8mb4;

INSERT INTO account (owner, balance) VALUES
  ('Ada', 1000.00), ('Grace', 1000.00), ('Alan', 1000.00), ('Edsger', 1000.00),
  ('Barbara', 1000.00), ('Ken', 1000.00), ('Margaret', 1000.00), ('Dennis', 1000.00),
  ('Frances', 1000.00), ('Linus', 1000.00);
