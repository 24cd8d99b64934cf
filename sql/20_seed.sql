-- Seed data for the example app: three departments, a dozen employees.

INSERT INTO department (name) VALUES ('Engineering'), ('Sales'), ('Support');

INSERT INTO employee (name, salary, hired, department_id) VALUES
  ('Ada Lovelace', 98000.00, '2019-03-01', 1),
  ('Grace Hopper', 105000.00, '2018-07-15', 1),
  ('Alan Turing', 99000.00, '2020-01-06', 1),
  ('Edsger Dijkstra', 97000.00, '2021-09-13', 1),
  ('Barbara Liskov', 101000.00, '2017-11-20', 1),
  ('Ken Thompson', 96000.00, '2022-02-01', 1),
  ('Margaret Hamilton', 72000.00, '2019-05-27', 2),
  ('Dennis Ritchie', 68000.00, '2020-10-12', 2),
  ('Frances Allen', 70500.00, '2023-04-03', 2),
  ('John O''Neil', 54000.00, '2021-06-21', 3),       -- a doubled quote
  ('Renée Müller', 56000.00, '2022-08-08', 3),       -- UTF-8 names
  ('Linus "100%" Ng', NULL, NULL, 3);                -- a percent sign is never a parameter
